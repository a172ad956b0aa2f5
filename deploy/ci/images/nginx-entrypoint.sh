#!/bin/sh
# As the official nginx image does: each /etc/nginx/templates/*.template is written to
# /etc/nginx/conf.d/ with envsubst, replacing only variables set in the environment whose name
# matches NGINX_ENVSUBST_FILTER (nginx's own $host, $scheme... stay). Then nginx in the
# foreground.
set -eu
templates=/etc/nginx/templates
filter="${NGINX_ENVSUBST_FILTER:-}"
defined=$(env | cut -d= -f1 | grep -E "${filter:-.}" | sed 's/^/${/; s/$/}/' | tr '\n' ' ')
for template in "$templates"/*.template; do
    [ -e "$template" ] || continue
    out="/etc/nginx/conf.d/$(basename "$template" .template)"
    envsubst "$defined" < "$template" > "$out"
    echo "nginx-entrypoint: $template -> $out"
done
nginx -t -q
exec nginx -g 'daemon off;'
