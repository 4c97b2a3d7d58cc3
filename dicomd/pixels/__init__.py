"""Burned-in text: why an instance may carry it (detect), the redaction rules that match it
(rules), Clean Pixel Data that blanks their rectangles (redact), the optional OCR check (ocr) and
what the archive step and the build step ask of all of them (policy).
"""
