"""The local twin of the deployed application: template.yaml in moto, our handlers in-process, and an HTTP
server in front that checks SigV4 like API Gateway's IAM authorizer (``tokenmigration local serve``)."""
