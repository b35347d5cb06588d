"""GitLab and gitlab-runner: the API, config.toml, runner registration, the smoke job."""
