#!/bin/sh
# Writes the default user and vhost from RABBITMQ_DEFAULT_* (as the official image does), then
# runs the broker in the foreground as the rabbitmq user.
set -eu
conf=/etc/rabbitmq/conf.d/10-defaults.conf
{
    echo "default_user = ${RABBITMQ_DEFAULT_USER:-guest}"
    echo "default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}"
    echo "default_vhost = ${RABBITMQ_DEFAULT_VHOST:-/}"
    echo "loopback_users = none"
} > "$conf"
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq
exec runuser -u rabbitmq -- /usr/sbin/rabbitmq-server
