"""`kubectl crawljob`: a kubectl plugin for everyday CrawlJob operations."""
