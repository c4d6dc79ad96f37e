"""The Extension Backend Service (EBS) of streamsight's Twitch extension.

A viewer's extension (extension/) calls `GET /ebs/v1/channel` with its Twitch extension JWT;
the EBS checks the token (jwt.py), limits each viewer's rate (ratelimit.py) and answers with the
channel's live view (channel.py). Its settings are in config.py.
"""
