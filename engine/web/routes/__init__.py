"""The page's routes, one module per resource: the page and what it shows (``info``), uploads, jobs and the
event stream. Each takes the app's shared state as a dependency (``engine.web.settings.web_state``)."""
