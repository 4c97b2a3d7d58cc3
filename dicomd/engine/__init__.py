"""The asyncio receive engine (``receivers[].engine = "asyncio"``): DICOM upper layer, DIMSE and
C-STORE on one event loop per process, one coroutine per association, no thread per association
and no polling.

Reused from the libraries, because it is protocol knowledge that is not per instance and they
have it right:
- association PDUs and their items: ``pynetdicom.pdu`` (A-ASSOCIATE-RQ/AC/RJ, A-ABORT) and
  ``pynetdicom.pdu_primitives`` (maximum length, implementation class/version, asynchronous
  operations window, SCP/SCU role selection, user identity);
- presentation context negotiation: ``pynetdicom.presentation.negotiate_as_acceptor``;
- the storage SOP classes (``pynetdicom.AllStoragePresentationContexts``), UIDs from pydicom, the
  transfer syntaxes dicomd accepts (dicomd.scp.TRANSFER_SYNTAXES);
- routing, staging, the site script, quarantine and recording: dicomd.ingest, as for every receiver;
  and dicomd.header.read_header whenever the streaming header read gives up.

Not reused, because it runs for every instance and the general code costs more CPU than the rest
of the receive path (each is tiny and property-tested byte for byte against pydicom/pynetdicom in
tests/engine/test_codecs.py):
- P-DATA-TF framing, read straight from the socket into the spool file (pdu.py);
- the command set parse and the C-STORE/C-ECHO response encode (dimse.py);
- the File Meta Information written at the head of each spool file (dimse.py);
- the routing-header read, on the data set's bytes as they pass (headscan.py).

Modules: pdu (framing), dimse (command sets), headscan (routing header), spool (one incoming
data set), durable (batched data syncs, by syncfs or file by file as measured), association (one
association's coroutine), server (event loop, receivers, accepting, SO_REUSEPORT), balance
(receiver processes of one port even out their associations), receivers (choose the engine per
receiver).
"""
