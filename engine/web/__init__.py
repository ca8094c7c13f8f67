"""``nst-engine serve``: the web page (engine.web.app), its jobs (engine.web.jobs) and its uploads
(engine.web.uploads). A runner on a session, as the cluster and video runners are; needs the web extra."""
