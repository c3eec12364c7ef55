"""Serving stored photos to the people allowed to see their job."""
from flask import Blueprint

bp = Blueprint("photos", __name__)
