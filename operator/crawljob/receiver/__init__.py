"""The receiver: S3 event webhooks in, CrawlJobs out (`crawljob receiver`)."""
