"""The HTTP API: `assistant serve`. A FastAPI app over the same Assistant the CLI and the portal use.

    from assistant.api.app import create_app
    app = create_app(assistant, ApiKeyStore(settings.api_keys_file), settings)

Modules, one job each: app (the factory: middleware, routes, OpenAPI), auth (who is calling: an API key or an OIDC
token), keys (the hashed key file), oidc (token verification), ratelimit, bodylimit, headers, metrics, errors (exceptions to
JSON answers), schemas (request and response models, hence the OpenAPI document), state (what the routes share),
routes/ (thin routers over the Assistant: no retrieval logic of their own), server (uvicorn).

Nothing is imported here: `assistant keys` needs only the key store, not the web framework.
"""
