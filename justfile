# Convenience recipes; each calls the script the README documents.

# Install and start the local services (RabbitMQ, nx-27017, libtorch, Prometheus).
setup:
    bash deploy/dev/setup.sh

# The main job: the whole pipeline on this machine with the saved pages and simulated people.
demo *ARGS:
    bash deploy/dev/demo.sh {{ARGS}}

# Deployment checks, format check, clippy and every test against the real services.
test:
    bash deploy/dev/test.sh

# Every worker's benchmark; writes docs/BENCHMARKS.md.
bench:
    bash deploy/dev/bench.sh
