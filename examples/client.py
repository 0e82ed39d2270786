"""POST a /predict request and print the signal and its risk; standard library only.

Usage: EDGE_API_KEY=... python examples/client.py [request.json] [url]
(defaults: examples/predict_request.json, $EDGE_URL or http://127.0.0.1:8000/predict)
"""

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

path = sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("predict_request.json")
url = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("EDGE_URL", "http://127.0.0.1:8000/predict")
headers = {"Content-Type": "application/json", "X-API-Key": os.environ.get("EDGE_API_KEY", "")}
request = urllib.request.Request(url, data=Path(path).read_bytes(), headers=headers, method="POST")
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
except urllib.error.HTTPError as e:  # 4xx/5xx: the service's error body says what was wrong, field by field
    text = e.read().decode(errors="replace")
    try:
        error = json.loads(text)
        text = error["error"] + "".join(f"\n  {d['field']}: {d['message']}" for d in error.get("details", []))
    except (ValueError, KeyError, TypeError):
        pass  # not the service's JSON error body: show it as it came
    sys.exit(f"HTTP {e.code}: {text}")
except urllib.error.URLError as e:
    sys.exit(f"cannot reach {url}: {e.reason}")
prediction, risk = answer["prediction"], answer["risk"]
print(f"signal {prediction['signal']} (confidence {prediction['confidence']:.2f})")
print(f"risk {risk['risk_level']} ({risk['risk_score']:g}/10): {risk['recommendation']}")
