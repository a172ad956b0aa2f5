"""Bounce and complaint intake: classification, the SMTP receiver, webhooks, IMAP polling."""
