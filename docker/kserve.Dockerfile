# The KServe runtime image (deploy/kserve/servingruntime.yaml): TorchServe's own KServe
# image, same TorchServe release as requirements.txt, plus ONNX Runtime for the archives
# (tests/test_deploy.py checks both pins against requirements.txt).
#   docker build -f docker/kserve.Dockerfile -t style-transfer-kserve docker
ARG BASE_IMAGE=pytorch/torchserve-kfs:0.12.0
FROM ${BASE_IMAGE}
USER 0
RUN pip install --no-cache-dir onnxruntime==1.32.0
# Back to the base image's own non-root user (its uid is the base image's business).
# hadolint ignore=DL3066
USER model-server
