"""Replay a CSV of candles over the /stream WebSocket, one bar per message, and print each answer.

Usage: EDGE_API_KEY=... python examples/stream_client.py [bars.csv] [symbol] [exchange]
(defaults: examples/sp500_daily.csv — the last 80 S&P 500 days —, SPX/USD, binance;
 $EDGE_STREAM_URL or ws://127.0.0.1:8000/stream). CSV header: timestamp,open,high,low,close,volume (ISO 8601
timestamps with a UTC offset). Exit status 1 if the server refused any bar.
"""

import csv
import json
import os
import sys
from pathlib import Path

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

path = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("sp500_daily.csv")
symbol = sys.argv[2] if len(sys.argv) > 2 else "SPX/USD"
exchange = sys.argv[3] if len(sys.argv) > 3 else "binance"
url = os.environ.get("EDGE_STREAM_URL", "ws://127.0.0.1:8000/stream")
with open(path, newline="") as f:
    bars = [{k: v if k == "timestamp" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]

refused = 0
try:
    with connect(url, additional_headers={"X-API-Key": os.environ.get("EDGE_API_KEY", "")}) as ws:
        for bar in bars:
            ws.send(json.dumps({"symbol": symbol, "exchange": exchange, "candles": [bar]}))
            answer = json.loads(ws.recv())
            if "error" in answer:  # the bar was not stored; the service says which field broke which rule
                refused += 1
                reasons = "; ".join(f"{d['field']}: {d['message']}" for d in answer["details"]) or answer["error"]
                print(f"{bar['timestamp']} refused {answer['code']}: {reasons}", file=sys.stderr)
            elif answer.get("status") == "warming":
                print(f"{bar['timestamp']} warming {answer['have']}/{answer['need']}")
            else:
                prediction, risk = answer["prediction"], answer["risk"]
                print(
                    f"{bar['timestamp']} signal {prediction['signal']} (confidence {prediction['confidence']:.2f}) "
                    f"risk {risk['risk_level']} ({risk['risk_score']:g}/10)"
                )
except InvalidStatus as e:  # the upgrade was refused: the service's JSON error body says why
    body = (e.response.body or b"").decode(errors="replace")
    sys.exit(f"HTTP {e.response.status_code}: {body}")
except OSError as e:
    sys.exit(f"cannot reach {url}: {e}")
sys.exit(1 if refused else 0)
