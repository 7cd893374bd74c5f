# contend in a container: every server model and every client, `contend` as the entry point.
#
#   docker build -t contend .
#   docker run --rm -p 127.0.0.1:7070:7070 contend
#
# docker-compose.yml runs one container per model, a real redis-server beside
# them, and scalable load clients; see README.md ("Classroom").
FROM python:3.11-slim

# No .pyc files to write at run time, and logs straight to `docker logs`.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY server ./server
COPY client ./client
COPY shared ./shared
COPY contend ./contend
# With Locust, so the compose profile `locust` runs a master and workers from this image too.
RUN pip install '.[locust]' && rm -rf /src

# A server that only needs to listen on a high port has no reason to be root.
RUN useradd --create-home --uid 10001 contend
USER contend
WORKDIR /home/contend

EXPOSE 7070
ENTRYPOINT ["contend"]
# In a container no client is on loopback, so protected mode would refuse every one;
# the port you publish (docker run -p 127.0.0.1:7070:7070 ...) is the guard instead.
CMD ["serve", "--host", "0.0.0.0", "--protected-mode", "no"]
