"""The README's example: create an app, register two users, send, print the outcomes.

Run with `make run` going, and AWS_SHARED_CREDENTIALS_FILE=.herald/credentials AWS_PROFILE=herald.
"""

import os

import boto3

pinpoint = boto3.client("pinpoint", region_name="us-east-1",
                        endpoint_url=os.environ.get("HERALD_URL", "http://127.0.0.1:8080"))

app_id = pinpoint.create_app(CreateApplicationRequest={"Name": "demo"})[
    "ApplicationResponse"]["Id"]
pinpoint.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
    "FromAddress": "hello@example.com", "Identity": "example.com", "Enabled": True})
pinpoint.update_sms_channel(ApplicationId=app_id, SMSChannelRequest={"Enabled": True})
pinpoint.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": [
    {"Id": "ada-mail", "ChannelType": "EMAIL", "Address": "ada@example.com",
     "User": {"UserId": "ada", "UserAttributes": {"FirstName": ["Ada"]}}},
    {"Id": "ada-phone", "ChannelType": "SMS", "Address": "+15555550100",
     "User": {"UserId": "ada", "UserAttributes": {"FirstName": ["Ada"]}}},
    {"Id": "bob-mail", "ChannelType": "EMAIL", "Address": "bob@example.com",
     "User": {"UserId": "bob", "UserAttributes": {"FirstName": ["Bob"]}}},
]})

response = pinpoint.send_users_messages(ApplicationId=app_id, SendUsersMessageRequest={
    "MessageConfiguration": {
        "EmailMessage": {"SimpleEmail": {
            "Subject": {"Data": "Hello {{User.UserAttributes.FirstName}}"},
            "TextPart": {"Data": "Your order has shipped."}}},
        "SMSMessage": {"Body": "Hi {{User.UserAttributes.FirstName}}, your order has shipped."},
    },
    "Users": {"ada": {}, "bob": {}},
})
for user, endpoints in response["SendUsersMessageResponse"]["Result"].items():
    for endpoint_id, result in endpoints.items():
        print(user, endpoint_id, result["DeliveryStatus"], result.get("StatusMessage", ""))
print(pinpoint.get_user_endpoints(ApplicationId=app_id, UserId="ada")["EndpointsResponse"])
