# syntax=docker/dockerfile:1
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin fastgw
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && fastgw version | grep -q "compiled core"
USER 10001
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
ENTRYPOINT ["fastgw"]
CMD ["run", "-c", "/etc/fastgw/gateway.yaml"]
