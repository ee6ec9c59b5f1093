"""The operator: CrawlJobs reconciled into Jobs, their status reported (`crawljob operator`)."""
