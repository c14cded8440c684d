"""The live page the daemon serves at `/` (issue 15): static HTML, CSS and JavaScript shipped in
this package (`static/`), with uPlot vendored from the npm registry (`static/vendor/uplot/`,
see VENDORED.md there). Nothing is built at run time.

- `routes`: `add_page_routes(app)` puts the page on the API's app: `GET /` and `GET
  /static/{name}` for a fixed set of names, with a Content-Security-Policy that allows only the
  page's own origin. The page holds no secret: it reads `/metrics` (public) and, once the user
  gives it a token, the API's routes for agents, events, status and the cluster.
"""

from maxwell.web.routes import PAGE_FILES, add_page_routes

__all__ = ["PAGE_FILES", "add_page_routes"]
