# CPU image: ONNX Runtime serving (or OpenVINO: --build-arg MODEL_RUNTIME=openvino), no torch,
# the model baked in.
#   make artifacts && podman build -t kind.local/densenet-serving-cpu:0.1.0 .   (or: make image)
# Pin the base by digest in a release build, with the tag kept for readers:
#   --build-arg BASE_IMAGE=python:3.11-slim@sha256:<digest>
# (`podman image inspect --format '{{.Digest}}' python:3.11-slim` after a pull). The default
# stays a tag so the build also runs against a local, unpushed base image.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG PIP_INDEX_URL=https://pypi.org/simple
# The runtime the image serves picks the lock it installs.
ARG MODEL_RUNTIME=onnxruntime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_INDEX_URL=${PIP_INDEX_URL}
WORKDIR /src
# The venv gets no pip or setuptools: the build stage's own pip installs into it, so the
# runtime image carries neither (nothing installs at run time).
RUN python -m venv --without-pip /opt/venv
# The runtime's lock first, by hash and without resolving (make lock writes both from
# pyproject.toml): a wheel whose hash differs fails the build, and this layer is reused
# while only the code changes. Bytecode is compiled here: the root filesystem is read-only
# at run time, and compiling every module on each cold start would cost about half a second.
# Behind a TLS-intercepting proxy, pass its CA without baking it into a layer:
#   --secret id=pip_ca,src=/path/to/ca-bundle.crt
COPY requirements/serve-onnxruntime.txt requirements/serve-openvino.txt requirements/sbom.txt ./requirements/
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    case "${MODEL_RUNTIME}" in \
      onnxruntime|openvino) ;; \
      *) echo "MODEL_RUNTIME must be onnxruntime or openvino" >&2; exit 1 ;; \
    esac; \
    python -m pip --python /opt/venv/bin/python install --require-hashes --no-deps \
      -r "requirements/serve-${MODEL_RUNTIME}.txt" \
    && python -m venv /opt/sbom \
    && /opt/sbom/bin/pip install --require-hashes --no-deps -r requirements/sbom.txt
# Then the project itself, without dependencies: no torch, no build tools in the final stage.
COPY pyproject.toml README.md ./
COPY service ./service
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    python -m pip --python /opt/venv/bin/python install --no-deps . \
    && /opt/venv/bin/python -c "import importlib.util as u; assert u.find_spec('torch') is None" \
    && /opt/sbom/bin/cyclonedx-py environment --output-reproducible --output-format JSON \
      --output-file /opt/sbom.cdx.json \
      /opt/venv/bin/python

FROM ${BASE_IMAGE} AS runtime
ARG MODEL_VARIANT=distilled
ARG MODEL_RUNTIME=onnxruntime
# What built it (make image passes them): the commit, the project's version, the repository.
ARG REVISION=unknown
ARG VERSION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="densenet-serving-cpu" \
      org.opencontainers.image.description="DenseNet-121 classifier serving, ${MODEL_VARIANT} on ${MODEL_RUNTIME}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_DIR=/models \
    MODEL_VARIANT=${MODEL_VARIANT} \
    MODEL_RUNTIME=${MODEL_RUNTIME} \
    PORT=8080
COPY --from=build /opt/venv /opt/venv
# The bill of materials of /opt/venv (CycloneDX JSON); `make image` copies it out beside the tag.
COPY --from=build /opt/sbom.cdx.json /usr/share/doc/densenet-serving/sbom.cdx.json
# Only what the CPU runtimes read: the manifest and the ONNX graphs (model.onnx, and for the
# static int8 variants OpenVINO's own model-openvino.onnx).
COPY models/${MODEL_VARIANT}/manifest.json models/${MODEL_VARIANT}/model*.onnx /models/${MODEL_VARIANT}/
USER 65532:65532
EXPOSE 8080
# Settings come from the environment (PORT included), so the exec form needs no shell.
CMD ["python", "-m", "service", "serve"]
