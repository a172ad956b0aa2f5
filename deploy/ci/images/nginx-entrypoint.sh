#!/bin/sh
# As the official nginx image does: each /etc/nginx/templates/*.template is written to
# /etc/nginx/conf.d/ with envsubst, replacing only variables set in the environment whose name
# matches NGINX_ENVSUBST_FILTER (nginx's own $host, $scheme... stay); the official image's
# NGINX_ENVSUBST_TEMPLATE_DIR and NGINX_ENVSUBST_OUTPUT_DIR move the folders. Then the config
# test and nginx in the foreground.
set -eu
templates="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
output="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
filter="${NGINX_ENVSUBST_FILTER:-}"
defined=$(env | cut -d= -f1 | grep -E "${filter:-.}" | sed 's/^/${/; s/$/}/' | tr '\n' ' ')
for template in "$templates"/*.template; do
    [ -e "$template" ] || continue
    out="$output/$(basename "$template" .template)"
    envsubst "$defined" < "$template" > "$out"
    echo "nginx-entrypoint: $template -> $out"
done
nginx -t -q
exec nginx -g 'daemon off;'
