# TensorBoard for the local stack: reads the benchmark's logs under results/tensorboard.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m pip install "tensorboard==2.21.0"
USER 65532:65532
EXPOSE 6006
ENTRYPOINT ["tensorboard", "--bind_all", "--port", "6006"]
CMD ["--logdir", "/results/tensorboard"]
