# TensorBoard for the local stack: reads the benchmark's logs under results/tensorboard.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_INDEX_URL=${PIP_INDEX_URL}
# Behind a TLS-intercepting proxy, pass its CA without baking it into a layer:
#   --secret id=pip_ca,src=/path/to/ca-bundle.crt
# The lock, by hash (make lock writes it from requirements/tensorboard-image.in): a differing wheel fails.
COPY requirements/tensorboard-image.txt /tmp/requirements.txt
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python -m pip install --require-hashes --no-deps -r /tmp/requirements.txt
USER 65532:65532
EXPOSE 6006
ENTRYPOINT ["tensorboard", "--bind_all", "--port", "6006"]
CMD ["--logdir", "/results/tensorboard"]
