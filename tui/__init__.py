"""Terminal UI for jobs and deployments."""
