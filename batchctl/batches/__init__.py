"""OpenAI Batch API submissions: validate and split input, submit crash-safely, refresh, merge.

- ``validation``: one streaming pass over the JSONL input that checks every line and cuts it into
  parts that fit a batch (one model per part).
- ``submission``: records a submission, its parts and every request before any network call, then
  drives each part through upload → create → refresh → download, adopting what a crashed
  process may have created, so nothing is ever uploaded or created twice.
- ``results``: turns downloaded output and error files into one outcome per request and writes the
  merged results in input order.
- ``pricing``: token estimates and costs at batch and synchronous prices.
"""
