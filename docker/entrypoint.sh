#!/bin/sh
# The image's entrypoint.
#
#   serve [sk-deploy serve options]   (the default) check the bundle at $SK_BUNDLE, build a TensorRT engine for
#                                     this GPU at first start when there is none, then serve it on $SK_PORT
#   prepare                           only the check and the engine build (a Kubernetes init container, say)
#   anything else                     run as given (sk-deploy inspect /models/bundle, bash, ...)
#
# Engines are tied to the GPU model and the TensorRT version that built them: none is baked into the image, one
# is built here on the GPU that will run it (minutes for SKNet-50; keep $SK_WORK_DIR on a volume to build once).
set -eu

: "${SK_BUNDLE:=/models/bundle}"
: "${SK_PRECISION:=fp32}"
: "${SK_BUILD_ENGINE:=auto}"
: "${SK_WORK_DIR:=/var/lib/sk-deploy}"
: "${SK_HOST:=0.0.0.0}"
: "${SK_PORT:=8000}"

command="${1:-serve}"
[ "$#" -gt 0 ] && shift

case "$command" in
  serve | prepare)
    bundle="$(sk-deploy prepare "$SK_BUNDLE" --precision "$SK_PRECISION" --build-engine "$SK_BUILD_ENGINE" \
      --work-dir "$SK_WORK_DIR")"
    if [ "$command" = prepare ]; then
      echo "$bundle"
      exit 0
    fi
    exec sk-deploy serve "$bundle" --host "$SK_HOST" --port "$SK_PORT" --precision "$SK_PRECISION" "$@"
    ;;
  *)
    exec "$command" "$@"
    ;;
esac
