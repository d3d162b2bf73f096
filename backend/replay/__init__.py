"""Stored outcomes of shop-floor mutations, so that an offline queue can resend safely."""
