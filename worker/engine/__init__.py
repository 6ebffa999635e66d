"""The engine: pure PyTorch (data, models, losses, train, evaluate, export).

Never imports Celery, SQLAlchemy, boto3 or FastAPI.
"""
