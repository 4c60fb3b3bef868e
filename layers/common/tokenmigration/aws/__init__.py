"""The AWS side of tokenmigration: run ledger (DynamoDB), feature flags (SSM), secrets, chunk lists (S3).

The Lambda handlers call these; nothing here knows Lambda or API Gateway event shapes, so the same code
serves a local server or a script run with AWS credentials.
"""
