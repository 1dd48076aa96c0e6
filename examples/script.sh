#!/bin/bash

ls -lh
