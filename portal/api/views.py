"""The JSON API for other systems, under /api/v1, with Bearer tokens."""
from flask import Blueprint

bp = Blueprint("api", __name__)
