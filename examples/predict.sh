#!/usr/bin/env bash
# POST the example window (the last 60 S&P 500 daily candles) to a local service started with
# EDGE_API_KEYS=$EDGE_API_KEY .venv/bin/python -m runtime
curl -s -H 'Content-Type: application/json' -H "X-API-Key: $EDGE_API_KEY" --data @examples/predict_request.json http://127.0.0.1:8000/predict
