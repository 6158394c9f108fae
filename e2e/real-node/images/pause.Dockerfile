# The sandbox image: the static pause binary built from the Kubernetes module's pause.c
# (e2e/real-node/build.sh), as build/pause/Dockerfile in Kubernetes packs it.
FROM scratch
COPY --from=prebuilt-binaries pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
