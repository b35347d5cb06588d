#!/bin/sh
echo prod-password
