"""Reports rendered from run results and the registry."""
