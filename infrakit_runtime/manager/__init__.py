"""The manager: leadership and the spec store wrapped around the group controller."""
