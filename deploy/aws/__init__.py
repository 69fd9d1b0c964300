"""The lake, its catalog and the analysts' side in AWS, as code (issue 12, section 6).

- template.py: generates the CloudFormation template deploy/aws/smartcity.yaml from the project's
  own definitions (the lake's tables and layout, the Glue database name, analytics/queries/*.sql);
  `python -m deploy.aws.template` rewrites it, tests/test_aws_iac.py checks that it is current.
- deploy.py: creates or updates a stack from that file through a change set, executed only on
  request (`python -m deploy.aws.deploy --stack-name N [--execute]`).

docs/analytics.md, "AWS", says what the template holds and how to deploy it to a real account."""
