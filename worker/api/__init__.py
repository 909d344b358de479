"""The HTTP API and the ops console, served by the `api` process (`tokenworker api`).

A thin layer over `worker.service`: routes parse and check input, call one service
function, and render its typed result (`as_dict()`) as JSON. Errors from the one tree in
`worker.errors` map to HTTP statuses in `worker.api.errors`; nothing here talks to Redis or
Salesforce directly.

Contract between the modules of this package (so they can be written apart):
- `app.state.runtime` is the process's `worker.engine.runtime.Runtime` (opened on startup,
  closed on shutdown) and `app.state.settings` its `Settings`.
- `worker.api.auth.require(request, scope)` returns the calling `ApiKey` or raises
  `ApiError` (401 unauthorized / 403 forbidden); scopes are ordered read < connect < admin.
- Every module with routes exposes `routes() -> list[starlette.routing.BaseRoute]`;
  `worker.api.app.make_app` mounts them. A module holding process-wide resources (the
  proxy's HTTP session) may also expose `async shutdown(app)`, awaited when the app stops.
"""
