"""The web page served at `/`: type a prompt, pick the guidance scale, watch the agent play (the latest
frame is fetched a few times a second while the rollout runs) and see its achievements. Plain HTML + JS."""

INDEX_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>STEVE-1 on Ray Serve</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 16px; background: #f4f4f2; color: #222; }
  h1 { font-size: 20px; margin: 0 0 12px 0; }
  #controls { display: flex; gap: 12px; align-items: center; flex-wrap: wrap; margin-bottom: 12px; }
  #prompt { width: 340px; padding: 6px; font-size: 15px; }
  #scaleValue { display: inline-block; width: 2.5em; font-weight: bold; }
  #main { display: flex; gap: 16px; align-items: flex-start; }
  #frame { width: 640px; height: 360px; background: #111; object-fit: contain; border: 1px solid #999; }
  #side { min-width: 240px; }
  #status { font-weight: bold; margin-bottom: 8px; }
  #achievements li { color: #0a6b2b; }
  #achievements li.none { color: #777; }
  #error { color: #b00020; white-space: pre-wrap; }
  button { padding: 6px 14px; font-size: 15px; }
</style>
</head>
<body>
<h1>STEVE-1: prompt &rarr; behaviour (embedded world)</h1>
<div id="controls">
  <label>Prompt <input id="prompt" type="text" value="collect a sapling"></label>
  <label>Guidance scale <input id="scale" type="range" min="0" max="12" step="0.5" value="__SCALE__">
    <span id="scaleValue">__SCALE__</span></label>
  <label>Steps <input id="steps" type="number" min="1" max="1000" value="100" style="width:5em"></label>
  <label>World seed <input id="seed" type="number" min="0" value="0" style="width:5em"></label>
  <label>API key <input id="apikey" type="password" style="width:8em" placeholder="(if set)"></label>
  <button id="start">Play</button>
</div>
<div id="main">
  <img id="frame" alt="agent view">
  <div id="side">
    <div id="status">idle</div>
    <div>step <span id="step">0</span> / <span id="total">0</span></div>
    <div>reward <span id="reward">0</span></div>
    <h3>Achievements</h3>
    <ul id="achievements"></ul>
    <div id="videoBox"></div>
    <div id="error"></div>
  </div>
</div>
<script>
const $ = (id) => document.getElementById(id);
let rolloutId = null, timer = null, frameUrl = null;
$("scale").oninput = () => { $("scaleValue").textContent = $("scale").value; };
function headers() {
  const h = {"Content-Type": "application/json"};
  if ($("apikey").value) h["x-api-key"] = $("apikey").value;
  return h;
}
async function api(path, opts) {
  const r = await fetch(path, Object.assign({headers: headers()}, opts || {}));
  if (!r.ok) { let m = r.status + ""; try { m += ": " + (await r.json()).error; } catch (e) {} throw new Error(m); }
  return r;
}
function showAchievements(ach) {
  const ul = $("achievements"); ul.innerHTML = "";
  Object.entries(ach || {}).filter(([k, v]) => v > 0).forEach(([k, v]) => {
    const li = document.createElement("li"); li.textContent = k + " \u00d7" + v; ul.appendChild(li); });
  if (!ul.children.length) { const li = document.createElement("li"); li.className = "none";
    li.textContent = "(none yet)"; ul.appendChild(li); }
}
async function refreshFrame() {
  try {
    const r = await api("/rollouts/" + rolloutId + "/frame.jpg?t=" + Date.now());
    const blob = await r.blob();
    if (blob.size > 0) {
      const url = URL.createObjectURL(blob);
      $("frame").src = url; if (frameUrl) URL.revokeObjectURL(frameUrl); frameUrl = url;
    }
  } catch (e) {}
}
let polling = false;
async function poll() {
  if (!rolloutId || polling) return;
  polling = true;
  try {
    const s = await (await api("/rollouts/" + rolloutId)).json();
    $("step").textContent = s.step; $("total").textContent = s.steps;
    $("reward").textContent = (s.reward || 0).toFixed(1);
    showAchievements(s.achievements);
    await refreshFrame();
    if (s.status === "done" || s.status === "failed") {
      clearInterval(timer); timer = null; $("start").disabled = false;
      if (s.status === "failed") $("error").textContent = s.error || "failed";
      if (s.status === "done") {
        $("videoBox").innerHTML = '<a id="videoLink" href="/rollouts/' + rolloutId + '/video.mp4">episode mp4</a>';
      }
    }
    $("status").textContent = s.status;  // last: "done" means everything above is on the page
  } catch (e) { $("error").textContent = String(e); }
  polling = false;
}
$("start").onclick = async () => {
  $("error").textContent = ""; $("videoBox").innerHTML = ""; $("achievements").innerHTML = "";
  $("start").disabled = true; $("status").textContent = "starting";
  try {
    const body = {prompt: $("prompt").value, cond_scale: parseFloat($("scale").value),
                  steps: parseInt($("steps").value), world_seed: parseInt($("seed").value)};
    const r = await (await api("/rollouts", {method: "POST", body: JSON.stringify(body)})).json();
    rolloutId = r.rollout_id; $("status").textContent = r.status; $("total").textContent = r.steps;
    timer = setInterval(poll, 300);
  } catch (e) { $("error").textContent = String(e); $("start").disabled = false; $("status").textContent = "idle"; }
};
</script>
</body>
</html>
"""


def index_html(default_cond_scale: float) -> str:
    """The page, its guidance slider starting at the server's `default_cond_scale` (on the slider's 0.5 steps, within
    its 0-12 range)."""
    scale = min(12.0, max(0.0, round(float(default_cond_scale) * 2) / 2))
    return INDEX_HTML.replace("__SCALE__", f"{scale:g}")
