# The node agent alone (aidd-agent: httpx, psutil, nvidia-ml-py, orjson), for compute hosts.
#   docker build -f deploy/agent.Dockerfile -t aidd-agent .      (from the repository root)
# GPUs: the image carries no driver. Run it with the NVIDIA container toolkit (`--gpus all`, the compose
# file's device reservation, or the Kubernetes device plugin's `nvidia.com/gpu`): the toolkit mounts the
# host driver's NVML library (libnvidia-ml.so.1) and the devices into the container, and the agent reads
# the GPUs from it. Without it the agent runs and reports no GPUs.
FROM python:3.12-slim
COPY nodeagent /src/nodeagent
COPY aiddwire /src/aiddwire
RUN pip install --no-cache-dir /src/nodeagent && rm -rf /src \
 && useradd --create-home --uid 10001 aidd && mkdir -p /var/lib/aidd-agent/work \
 && chown -R aidd /var/lib/aidd-agent
# What the NVIDIA container toolkit should mount: NVML (utility) and CUDA (compute) for the tasks.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    AIDD_WORK_DIR=/var/lib/aidd-agent/work \
    PYTHONUNBUFFERED=1
USER aidd
WORKDIR /var/lib/aidd-agent
# Configure with the environment: AIDD_URL, AIDD_AGENT_TOKEN, WORKER_GROUP, AIDD_LABELS, AIDD_SLOTS, ...
# The agent handles SIGTERM itself (running tasks get --grace seconds, then are handed back) and reaps
# what its tasks leave behind (it is a child subreaper), so it can be the container's first process.
ENTRYPOINT ["aidd-agent"]
CMD ["--log-format", "json"]
