"""Ray Serve prompt-to-action service: sessions with classifier-free guidance, batched inference,
rollout actors playing in the embedded world, and a small web page. Entry: `app.app_builder`."""
