"""A handler of your own, written as for Lambda: the compose stack's override snippet (at the end of
docker-compose.yml) runs it in the service with CODE_PATH, and in an AWS Lambda base image beside
the service as an HTTP target. Replace it with your code.

It reads SQS records whose bodies are JSON, prints one line per batch (which reaches the service's
log, or the function container's), and reports the messages it could not process, so
ReportBatchItemFailures on the mapping retries only those.
"""

import json


def handler(event, context):
    failures = []
    for record in event["Records"]:
        try:
            body = json.loads(record["body"])
        except ValueError:
            body = {}
        if isinstance(body, dict) and body.get("poison") is True:
            failures.append({"itemIdentifier": record["messageId"]})
    print(f"{context.function_name}: {len(event['Records'])} records, {len(failures)} failed")
    return {"batchItemFailures": failures}
