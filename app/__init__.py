"""Panel dashboards for labelcore. UI only: every number comes from ``labelcore``."""
