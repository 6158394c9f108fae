# A shell for tests on the real node (hardening checked from inside a pod, connections tried with bash's
# /dev/tcp): the Debian base itself, with the same non-root user as the product images.
FROM debian:bookworm-slim
USER 65532:65532
CMD ["bash"]
