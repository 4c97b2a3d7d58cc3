"""dicomd: a DICOM ingestion and anonymization daemon with an XNAT-shaped prearchive."""

__version__ = "0.1.0"
