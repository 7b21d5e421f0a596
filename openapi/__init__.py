"""The OpenAPI contract: openapi.yaml is generated from the app, never edited by hand."""
