"""The baseline for bench/webhook_ingest.py: a Flask endpoint that reads the body and answers 200."""
from flask import Flask, request

app = Flask(__name__)


@app.post("/webhooks/stripe")
def bare():
    request.get_data()
    return {"received": True}
