# ssm_metarl_ray on the official Ray image. Ray in the image must equal the client's (2.60.0).
#   CPU: docker build -t ghcr.io/ssm-metarl/ssm-metarl-ray:0.1.0 .
#   GPU: docker build -t ghcr.io/ssm-metarl/ssm-metarl-ray:0.1.0-gpu \
#          --build-arg RAY_TAG=2.60.0-py311-gpu --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#   Run: docker run --rm --shm-size=8g ghcr.io/ssm-metarl/ssm-metarl-ray:0.1.0 ssm-metarl envs
ARG RAY_TAG=2.60.0-py311-cpu
FROM rayproject/ray:${RAY_TAG}

# torch first, from the CPU index by default, so `pip install .` does not pull the CUDA wheel.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# No rendering in training (the project's envs declare no render modes), so no GL libraries are
# installed. For offscreen frames: `sudo apt-get install -y libegl1` and run with MUJOCO_GL=egl.
ENV MUJOCO_GL=disable \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONUNBUFFERED=1

WORKDIR /home/ray/ssm_metarl_ray
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
# The source stays here too: RayJob entrypoints read tune_configs/ relative to this directory.
COPY --chown=ray:users . .
RUN pip install --no-cache-dir . && rm -rf build ./*.egg-info

CMD ["ssm-metarl", "--help"]
