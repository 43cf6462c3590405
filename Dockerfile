# The steve1_ray cluster image: Ray's own image (the Ray of pyproject.toml, Python 3.11, CUDA) with steve1_ray
# installed, for the nodes of cluster.yaml and the pods of deploy/kuberay/. Build and push it with
#   bash scripts/build_image.sh <registry>           # -> <registry>/steve1-ray:<version of pyproject.toml>
# (docs/deploy.md). The install steps are scripts/install.sh, the script scripts/setup.sh runs for the tests.
# torch comes from PyPI with its own CUDA runtime, so the host needs only a recent enough NVIDIA driver.
ARG BASE_IMAGE=rayproject/ray:2.60.0-py311-gpu

# 1. the wheel, built from the package sources only
FROM ${BASE_IMAGE} AS wheel
RUN mkdir -p /home/ray/build
WORKDIR /home/ray/build
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users scripts/install.sh scripts/install.sh
COPY --chown=ray:users steve1_ray steve1_ray
RUN bash scripts/install.sh wheel python /home/ray/dist

# 2. Ray's image plus torch and the wheel; no source tree (jobs run `steve1 <job>`, Serve imports the package)
FROM ${BASE_IMAGE}
COPY --chown=ray:users scripts/install.sh /home/ray/install.sh
COPY --chown=ray:users --from=wheel /home/ray/dist /home/ray/dist
RUN bash /home/ray/install.sh image python /home/ray/dist/steve1_ray-*.whl \
    && rm -rf /home/ray/dist /home/ray/install.sh
