"""`daskstep serve`: REANA's REST API on one machine, so that the real `reana-client` logs in,
runs, follows and fetches Dask workflows that daskstep executes.

- `store`: the server's state (users, logins, workflows) in SQLite beside the workspaces;
- `issuer`: its own OIDC issuer (discovery, device flow, refresh, JWT access tokens) on Authlib;
- `api`: the REANA frame (bearer tokens, error bodies), ping, info, you, secrets, the issuer's
  endpoints; `workflows`: the workflow and workspace endpoints, as reana_server.json says;
  `workspace`: paths kept inside a workspace, the specification bundle unpacked;
- `browser_login`: the authorization page of the loopback (PKCE) login;
- `runs`: each started workflow is a `daskstep run` subprocess in its workspace, queued;
- `reana_logs`: a run's job, scheduler and worker logs in REANA's logs document;
- `cli`: `daskstep serve` and `daskstep serve approve CODE`.
"""
