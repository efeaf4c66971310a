"""Check scans with the needle in: needle detection, registration to the plan, planned against actual."""
