# Convenience recipes; each calls the same script the README documents.

# Install and start the local services (RabbitMQ, nx-27017, libtorch, promtool).
setup:
    bash deploy/dev/setup.sh

# Format check, clippy and every test against the real services.
test:
    bash deploy/dev/test.sh
