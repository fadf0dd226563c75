# thisme-stac: library + CLI + STAC API + stac-browser in one image (api, harvester and browser
# services share it).

# stac-browser, built once with the pinned lockfile (the same script `make install` runs)
FROM node:20-slim AS browser
WORKDIR /src
COPY browser/package.json browser/package-lock.json ./browser/
COPY scripts/build_browser.sh ./scripts/
RUN bash scripts/build_browser.sh /stac_browser

FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY thisme_stac ./thisme_stac
COPY api ./api
RUN pip install ".[pgstac]" ./api
COPY --from=browser /stac_browser /opt/stac_browser
ENV THISME_BROWSER_DIR=/opt/stac_browser

RUN useradd --create-home --uid 10001 thisme
USER thisme
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/_mgmt/ping')"
CMD ["uvicorn", "thisme_stac_api.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8080"]
