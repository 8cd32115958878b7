# syntax=docker/dockerfile:1
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    NOTECODER_DATA_DIR=/var/lib/notecoder

WORKDIR /opt/notecoder

# CPU build of torch first: the default index would pull the multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY app ./app
COPY nlp ./nlp
COPY codebooks ./codebooks
COPY training ./training
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /var/lib/notecoder --create-home notecoder
USER 10001

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["notecoder", "serve", "--host", "0.0.0.0", "--port", "8000"]
